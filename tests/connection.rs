//! The store's connection to Redis, seen through a proxy, each case a bug found by review and
//! reproduced before its fix: a logout whose reply was lost is retried and still drops the
//! cookie, and commands do not wait for the replies of the batch in flight on their
//! connection.
mod common;

use std::time::Duration;

use axum::{routing::get, Router};
use common::{builder, Browser};
use tower_redis_session::{Session, SessionError, SessionStore};

/// A login, a read (the value's `Debug` form) and a logout that answers 200 with its error.
fn connection_app(store: &SessionStore) -> Router {
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
        .route(
            "/destroy",
            get(|s: Session| async move {
                match s.destroy().await {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!("{e:?}"),
                }
            }),
        )
        .layer(store.layer())
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
    let mut b = Browser::new(connection_app(&store));
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
    let mut b = Browser::new(connection_app(&store));
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
