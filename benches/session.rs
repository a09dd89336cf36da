//! Latency per request through the real tower stack (no sockets), against a redis-server this
//! bench starts on a free loopback port. Scenarios:
//!
//! - `no-layer`: the same router without the session layer (baseline);
//! - `floor`: the same router without the layer, whose handler sends the read's pipeline
//!   (`HGETALL` + `PEXPIRE`) by hand on this bench's own multiplexed connection (one round
//!   trip); `floor-direct`: that call alone;
//! - `read`, `write`, `create`, `regenerate`, `counter`: session operations;
//! - `untouched`: a route that carries the cookie but never touches the session;
//!
//! each with a small session (3 short fields) and a large one (50 fields, about 4 KB) where
//! the size matters. `BENCH_QUICK=1` shortens every measurement. Results land in
//! `target/criterion/ours/<scenario>-<size>/`; `scripts/bench.sh` turns them into BENCHMARKS.md.

#[path = "../tests/common/redis_server.rs"]
mod redis_server;
mod support;

use axum::{routing::get, Router};
use criterion::{criterion_group, criterion_main, Criterion};
use redis_server::RedisServer;
use support::{criterion, fields, seed_ours, send, session_scenarios, SIZES};
use tower_redis_session::{Session, SessionError, SessionStore};

fn app(store: &SessionStore) -> Router {
    Router::new()
        .route("/read", get(read))
        .route("/write", get(write))
        .route("/regenerate", get(regenerate))
        .route("/counter", get(counter))
        .route("/untouched", get(|| async { "ok" }))
        .route("/seed/{size}", get(seed_ours))
        .layer(store.layer())
}

/// The floor: the session's Redis work (the `HGETALL` + `PEXPIRE` pipeline of a read), sent by
/// this bench's own multiplexed connection, with none of the session logic around it.
async fn floor_load(conn: &redis::aio::MultiplexedConnection, key: &str) -> usize {
    let mut pipe = redis::pipe();
    pipe.cmd("HGETALL")
        .arg(key)
        .cmd("PEXPIRE")
        .arg(key)
        .arg(1_800_000)
        .ignore();
    let (hash,): (std::collections::HashMap<String, String>,) = pipe
        .query_async(&mut conn.clone())
        .await
        .expect("floor pipeline");
    hash.len()
}

fn floor_router(conn: &redis::aio::MultiplexedConnection, key: &str) -> Router {
    let (conn, key) = (conn.clone(), key.to_owned());
    Router::new().route(
        "/read",
        get(move || async move { floor_load(&conn, &key).await.to_string() }),
    )
}

fn bare() -> Router {
    Router::new().route("/read", get(|| async { "ok" }))
}

async fn read(s: Session) -> Result<String, SessionError> {
    Ok(s.get::<String>("user").await?.unwrap_or_default())
}
async fn write(s: Session) -> Result<&'static str, SessionError> {
    s.insert("theme", &support::next_value())?;
    Ok("ok")
}
async fn regenerate(s: Session) -> Result<&'static str, SessionError> {
    s.regenerate().await?;
    Ok("ok")
}
async fn counter(s: Session) -> Result<String, SessionError> {
    Ok(s.incr("n", 1).await?.to_string())
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let redis = RedisServer::start();
    let store = rt.block_on(async {
        SessionStore::builder()
            .redis_url(redis.url())
            .signing_keys([[7u8; 32]])
            .build()
            .await
            .expect("store")
    });
    let app = app(&store);
    let conn = rt.block_on(async {
        let client = redis::Client::open(redis.url()).expect("url");
        client
            .get_multiplexed_async_connection()
            .await
            .expect("the floor's connection")
    });
    let mut group = c.benchmark_group("ours");

    let bare = bare();
    group.bench_function("no-layer", |b| {
        b.to_async(&rt)
            .iter(|| async { send(&bare, "/read", None).await })
    });
    // CPU cost of the layer alone: the in-process backend does no I/O.
    let memory = rt.block_on(async {
        SessionStore::builder()
            .memory()
            .signing_keys([[7u8; 32]])
            .build()
            .await
            .expect("memory store")
    });
    let memory_app = crate::app(&memory);
    let memory_cookie = rt
        .block_on(send(&memory_app, "/seed/small", None))
        .expect("seeded cookie");
    for scenario in ["read", "untouched"] {
        let path = format!("/{scenario}");
        group.bench_function(format!("memory-{scenario}"), |b| {
            b.to_async(&rt)
                .iter(|| async { send(&memory_app, &path, Some(&memory_cookie)).await })
        });
    }
    group.bench_function("create", |b| {
        b.to_async(&rt)
            .iter(|| async { send(&app, "/write", None).await })
    });

    for size in SIZES {
        let cookie = rt
            .block_on(send(&app, &format!("/seed/{size}"), None))
            .expect("seeded cookie");
        // The seeded session: its fields, plus the creation time and the public id.
        let key = redis.keys().into_iter().find(|k| {
            let n: usize = redis.cmd(&["HLEN", k]);
            n == fields(size).len() + 2
        });
        let key = key.expect("seeded key");
        // The floor: a request whose handler does the session's Redis work by hand (the load
        // script through the same pool), on the same router without the session layer.
        let floor = floor_router(&conn, &key);
        group.bench_function(format!("floor-{size}"), |b| {
            b.to_async(&rt)
                .iter(|| async { send(&floor, "/read", None).await })
        });
        // The same round trip with no router around it, for reference.
        group.bench_function(format!("floor-direct-{size}"), |b| {
            b.to_async(&rt)
                .iter(|| async { floor_load(&conn, &key).await })
        });
        session_scenarios(&mut group, &rt, &app, &cookie, size);
    }
    group.finish();
}

criterion_group! {
    name = session;
    config = criterion();
    targets = benches
}
criterion_main!(session);
