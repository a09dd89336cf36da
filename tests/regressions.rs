//! Regressions found by review, each reproduced before its fix: regenerating an expired or
//! oversized session must not lock the browser out, a retried logout still drops the cookie,
//! two store operations of one handle never race, a sentinel naming a dead primary does not
//! hide the others, regenerate obeys the session size limit, commands do not wait for the
//! replies of the batch in flight on their connection, and counters beyond 2^53 come back
//! exact from Redis.
mod common;

use std::time::Duration;

use axum::{routing::get, Router};
use common::{builder, Browser};
use tower_redis_session::{Session, SessionError, SessionStore};

fn review_app(store: &SessionStore) -> Router {
    Router::new()
        .route(
            "/login",
            get(|s: Session| async move {
                s.insert("user", &"alice")?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/get/{k}",
            get(
                |s: Session, axum::extract::Path(k): axum::extract::Path<String>| async move {
                    Ok::<_, SessionError>(format!("{:?}", s.get::<String>(&k).await?))
                },
            ),
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
            "/two-incr",
            get(|s: Session| async move {
                let (a, b) = tokio::join!(s.incr("a", 1), s.incr("b", 1));
                Ok::<_, SessionError>(format!("{} {}", a?, b?))
            }),
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
            "/destroy",
            get(|s: Session| async move {
                match s.destroy().await {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!("{e:?}"),
                }
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
        .route(
            "/keys",
            get(|s: Session| async move {
                let mut k = s.keys().await?;
                k.sort();
                Ok::<_, SessionError>(k.join(","))
            }),
        )
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
    let mut b = Browser::new(review_app(&store));
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
    let mut b = Browser::new(review_app(&store));
    assert_eq!(b.get("/login").await.status, 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = b.get("/regen").await;
    assert_eq!(r.status, 200, "{r:?}");
    println!("set-cookie after regenerate on expired: {:?}", r.set_cookie);
    let r = b.get("/set/x").await;
    assert_eq!(r.status, 200, "a later write is refused: {r:?}");
}

/// Two concurrent incr() on a request without a session: both counters must land in the
/// one session the browser ends up with.
#[tokio::test]
async fn concurrent_increments_on_a_new_session_share_one_session() {
    let store = memory(60_000).await;
    let mut b = Browser::new(review_app(&store));
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
    let mut b = Browser::new(review_app(&store));
    let r = b.get("/two-incr").await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = b.get("/keys").await;
    println!("sessions in redis: {:?}", server.sessions());
    assert_eq!(r.body, "a,b", "one counter went to an orphaned session");
}

/// A key staged before regenerate() that takes the session over max_keys: the request fails,
/// but the browser is never left with a dead cookie (whose writes would all get 409): it
/// holds the session under its new id, data intact, and writes within the limit work.
#[tokio::test]
async fn regenerate_over_the_key_limit_keeps_the_browser_usable() {
    let store = builder().memory().max_keys(2).build().await.unwrap();
    let mut b = Browser::new(review_app(&store));
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

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sentinel(monitor_port: u16) -> common::topology::Daemon {
    let p = port();
    let dir = std::env::temp_dir().join(format!("review-sentinel-{}-{p}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("s.conf");
    std::fs::write(
        &conf,
        format!(
            "port {p}\nbind 127.0.0.1\ndir {}\nsentinel monitor svc 127.0.0.1 {monitor_port} 1\n\
             sentinel down-after-milliseconds svc 60000\n",
            dir.display()
        ),
    )
    .unwrap();
    common::topology::Daemon::start(p, vec![conf.to_string_lossy().into(), "--sentinel".into()])
}

/// The first sentinel names a primary that is down (a lagging sentinel during a failover);
/// the second names the live one. The store must still connect, by asking the second.
#[tokio::test]
async fn sentinel_naming_a_dead_primary_does_not_hide_the_others() {
    let live = common::RedisServer::start();
    let dead_port = port(); // nothing listens here
    let stale = sentinel(dead_port);
    let good = sentinel(live.port);
    let store = builder()
        .redis_sentinel("svc", [stale.url(), good.url()])
        .build()
        .await
        .unwrap();
    let mut b = Browser::new(review_app(&store));
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(b.get("/set/x").await.status.as_u16());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    println!("statuses: {statuses:?}, stats: {:?}", store.stats());
    assert!(statuses.contains(&200), "never connected: {statuses:?}");
}

/// A proxy in front of Redis that, once, forwards a request containing `needle` and then
/// drops both sockets without passing the reply back: the command ran, the client saw a
/// dropped connection.
async fn dropping_proxy(upstream: u16, needle: Vec<u8>) -> u16 {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let tripped = Arc::new(AtomicBool::new(false));
    tokio::spawn(async move {
        loop {
            let (client, _) = listener.accept().await.unwrap();
            let server = tokio::net::TcpStream::connect(("127.0.0.1", upstream))
                .await
                .unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let tripped = Arc::clone(&tripped);
            let needle = needle.clone();
            let back = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let hit = buf[..n]
                        .windows(needle.len())
                        .any(|w| w == needle.as_slice());
                    if hit && !tripped.swap(true, Ordering::SeqCst) {
                        back.abort(); // no reply goes back
                        let _ = sw.write_all(&buf[..n]).await;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        return; // drops both halves: the client sees the socket close
                    }
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                back.abort();
            });
        }
    });
    port
}

/// Logout whose end.lua ran but whose reply was lost: the Safe retry finds the marker, and
/// the response then keeps the cookie, whose writes get 409 from then on.
#[tokio::test]
async fn a_retried_destroy_still_removes_the_cookie() {
    let server = common::RedisServer::start();
    let sha = redis::Script::new(include_str!("../src/backend/lua/end.lua"))
        .get_hash()
        .to_owned();
    let proxy = dropping_proxy(server.port, sha.into_bytes()).await;
    let store = builder()
        .redis_url(format!("redis://127.0.0.1:{proxy}"))
        .pool_size(2)
        .build()
        .await
        .unwrap();
    let mut b = Browser::new(review_app(&store));
    assert_eq!(b.get("/login").await.status, 200);
    let r = b.get("/destroy").await;
    println!(
        "destroy: {} {:?} markers {:?} stats {:?}",
        r.status,
        r.set_cookie,
        server.markers(),
        store.stats()
    );
    println!(
        "login again with the cookie the browser kept: {}",
        b.peek("/login").await.status
    );
    assert!(
        r.set_cookie.iter().any(|c| c.contains("Max-Age=0")),
        "logout did not remove the cookie: {r:?}"
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
    let mut b = Browser::new(review_app(&store));
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

/// A proxy between the store and Redis that forwards each chunk after `delay` and records, in
/// the order they reach it, which way each went: `true` for the store's commands.
async fn recording_proxy(
    port: u16,
    delay: Duration,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<bool>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let log = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                return;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            for (commands, mut from, mut to) in [
                (
                    true,
                    Box::new(cr) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                    Box::new(sw) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                ),
                (false, Box::new(sr) as _, Box::new(cw) as _),
            ] {
                let (tx, mut rx) =
                    tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
                let log = std::sync::Arc::clone(&log);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n @ 1..) = from.read(&mut buf).await {
                        log.lock().expect("log").push(commands);
                        let _ = tx.send((tokio::time::Instant::now() + delay, buf[..n].to_vec()));
                    }
                });
                tokio::spawn(async move {
                    while let Some((at, bytes)) = rx.recv().await {
                        tokio::time::sleep_until(at).await;
                        if to.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    (format!("redis://{addr}"), seen)
}

/// Requests that come while a batch is out go out without waiting for its replies: holding
/// them until then (as this connection once did) made every request pay two round trips once
/// requests outnumbered connections, on any Redis across a network. On one connection behind
/// a proxy that delays each way by 200 ms, a second wave of reads, sent while the first wave's
/// batch is out, reaches Redis before the first wave's replies come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_do_not_wait_for_the_batch_in_flight() {
    let redis = common::RedisServer::start();
    let (url, seen) = recording_proxy(redis.port, Duration::from_millis(200)).await;
    let store = builder()
        .redis_url(url)
        .pool_size(1)
        .build()
        .await
        .expect("store");
    let mut b = Browser::new(review_app(&store));
    b.get("/login").await;
    seen.lock().expect("log").clear();
    let first = {
        let b = b.clone();
        tokio::spawn(async move { b.peek("/get/user").await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second: Vec<_> = (0..3)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move { b.peek("/get/user").await })
        })
        .collect();
    for task in std::iter::once(first).chain(second) {
        assert_eq!(task.await.expect("task").body, "Some(\"alice\")");
    }
    let seen = seen.lock().expect("log").clone();
    // The first wave's commands, the second wave's, then replies.
    let commands_before_a_reply = seen.iter().take_while(|&&c| c).count();
    assert!(
        commands_before_a_reply >= 2,
        "the second wave waited for the first one's replies: {seen:?}"
    );
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
