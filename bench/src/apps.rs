//! The apps under test: the same routes with our layer, with tower-sessions, and bare.

use std::collections::HashMap;

use axum::{extract::Path, routing::get, Router};
use tower_redis_session::{Session, SessionError, SessionStore, SessionStoreBuilder};
use tower_sessions::{Expiry, Session as TsSession, SessionManagerLayer};
use tower_sessions_redis_store::{fred::prelude::*, RedisStore};

use crate::support::{fields, next_value, seed_ours};

/// Our store on Redis at `url`, configured as the benchmarks compare it (no `Secure`, as
/// tower-sessions' layer here).
pub async fn ours_store(url: &str) -> SessionStore {
    ours_store_on(SessionStore::builder().redis_url(url)).await
}

/// Our store as [`ours_store`] configures it, on the deployment `builder` points at (a
/// `rediss://` URL with its CA, a cluster's seed nodes: see `crate::topology`).
pub async fn ours_store_on(builder: SessionStoreBuilder) -> SessionStore {
    builder
        .signing_keys([[7u8; 32]])
        .cookie_secure(false)
        .build()
        .await
        .expect("store")
}

/// The scenarios' routes through our layer.
pub fn ours_app(store: &SessionStore) -> Router {
    Router::new()
        .route("/read", get(read))
        .route("/write", get(write))
        .route("/regenerate", get(regenerate))
        .route("/counter", get(counter))
        .route("/untouched", get(|| async { "alice" }))
        .route("/seed/{size}", get(seed_ours))
        .layer(store.layer())
}

/// The same `/read` and `/untouched` routes without a session layer. Every app's routes
/// answer "alice" (what `/read` reads), so that all responses have the same bytes.
pub fn no_layer_app() -> Router {
    Router::new()
        .route("/read", get(|| async { "alice" }))
        .route("/untouched", get(|| async { "alice" }))
}

/// The untouched route behind a layer that only puts a clone of one `Arc` into the request's
/// extensions (`axum::Extension`): the least any layer that hands a handler a session does,
/// the reference for what our layer costs a route that never touches the session.
pub fn extension_only_app() -> Router {
    no_layer_app().layer(axum::Extension(std::sync::Arc::new(())))
}

async fn read(s: Session) -> Result<String, SessionError> {
    Ok(s.get::<String>("user").await?.unwrap_or_default())
}
async fn write(s: Session) -> Result<&'static str, SessionError> {
    s.insert("theme", &next_value())?;
    Ok("ok")
}
async fn regenerate(s: Session) -> Result<&'static str, SessionError> {
    s.regenerate().await?;
    Ok("ok")
}
async fn counter(s: Session) -> Result<String, SessionError> {
    Ok(s.incr("n", 1).await?.to_string())
}

/// A tower-sessions layer on Redis at `url`: `always_save` is its only way to slide expiry
/// on reads.
pub async fn tower_sessions_layer(
    url: &str,
    always_save: bool,
) -> SessionManagerLayer<RedisStore<Pool>> {
    tower_sessions_layer_on(Config::from_url(url).expect("fred config"), always_save).await
}

/// [`tower_sessions_layer`] on the deployment a fred `config` describes (TLS with a private
/// CA, a cluster: see `crate::topology`): a pool of 6 fred clients, as on plain TCP.
pub async fn tower_sessions_layer_on(
    config: Config,
    always_save: bool,
) -> SessionManagerLayer<RedisStore<Pool>> {
    let pool = Pool::new(config, None, None, None, 6).expect("fred pool");
    pool.init().await.expect("fred connect");
    SessionManagerLayer::new(RedisStore::new(pool))
        .with_secure(false)
        .with_expiry(Expiry::OnInactivity(time::Duration::minutes(30)))
        .with_always_save(always_save)
}

/// The scenarios' routes through tower-sessions.
pub fn tower_sessions_app(layer: SessionManagerLayer<RedisStore<Pool>>) -> Router {
    Router::new()
        .route("/read", get(ts_read))
        .route("/write", get(ts_write))
        .route("/regenerate", get(ts_regenerate))
        .route("/counter", get(ts_counter))
        .route("/untouched", get(|| async { "alice" }))
        .route("/seed/{size}", get(ts_seed))
        .layer(layer)
}

async fn ts_read(s: TsSession) -> String {
    s.get::<String>("user")
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}
async fn ts_write(s: TsSession) -> &'static str {
    s.insert("theme", next_value()).await.expect("insert");
    "ok"
}
async fn ts_regenerate(s: TsSession) -> &'static str {
    s.cycle_id().await.expect("cycle_id");
    "ok"
}
/// tower-sessions has no atomic counter: read, add, write back.
async fn ts_counter(s: TsSession) -> String {
    let n = s.get::<i64>("n").await.ok().flatten().unwrap_or(0) + 1;
    s.insert("n", n).await.expect("insert");
    n.to_string()
}
async fn ts_seed(s: TsSession, Path(size): Path<String>) -> &'static str {
    for (k, v) in fields(&size) {
        s.insert(&k, v).await.expect("insert");
    }
    "ok"
}

/// The floor: a router without the layer whose handler does a read's Redis work (the
/// `HGETALL` + `PEXPIRE` pipeline) through our store's own connections and nothing else.
pub fn floor_router(store: &SessionStore, key: &str) -> Router {
    let (store, key) = (store.clone(), key.to_owned());
    Router::new().route(
        "/read",
        get(move || async move {
            let fields = store.bench_floor_load(&key).await.expect("floor load");
            fields.to_string()
        }),
    )
}

/// redis-rs's own multiplexed connection to Redis at `url`, with its defaults, as an
/// application opens it: once, then cloned per request.
pub async fn redis_rs_connection(url: &str) -> RedisRs {
    RedisRs::Single(
        redis::Client::open(url)
            .expect("redis-rs client")
            .get_multiplexed_async_connection()
            .await
            .expect("redis-rs connect"),
    )
}

/// redis-rs's connection as an application holds it, per deployment: its multiplexed
/// connection (plain TCP or TLS), or its async cluster connection (which routes each command
/// to the master of its key's slot). Cloned per request.
#[derive(Clone)]
pub enum RedisRs {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for RedisRs {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            RedisRs::Single(c) => c.req_packed_command(cmd),
            RedisRs::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            RedisRs::Single(c) => c.req_packed_commands(cmd, offset, count),
            RedisRs::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisRs::Single(c) => c.get_db(),
            RedisRs::Cluster(c) => c.get_db(),
        }
    }
}

/// The floor through redis-rs: the same route doing the same pipeline, through redis-rs's
/// multiplexed connection (or its cluster connection) instead of ours, so that against [`floor_router`] it shows what our
/// own connection buys. The pipeline is built and the connection cloned per request, as
/// applications do; the hash is read as redis-rs types `HGETALL` (a `HashMap<String, String>`)
/// and the body is what ours' gives: the fields less the metadata (a name empty or starting
/// with NUL, as ours tells them).
pub fn floor_redis_rs_router(conn: RedisRs, key: &str) -> Router {
    let key = key.to_owned();
    Router::new().route(
        "/read",
        // axum clones the handler, so the connection, for every request.
        get(move || async move {
            let mut conn = conn;
            // Our read's expiry, 30 minutes.
            let (mut fields, _expired): (HashMap<String, String>, bool) = redis::pipe()
                .hgetall(&key)
                .pexpire(&key, 1_800_000)
                .query_async(&mut conn)
                .await
                .expect("floor (redis-rs) load");
            fields.retain(|k, _| !(k.is_empty() || k.starts_with('\0')));
            fields.len().to_string()
        }),
    )
}
