//! Deployment entries of the builder, and what they promise besides the conformance suite:
//! a unix socket, the application's own deadpool-redis pool (no checkout and no PING per
//! request), the environment form, configuration errors, a re-authentication that fails,
//! waiting for replicas, and sentinels of which the first names a dead primary.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::credentials::Password;
use common::record::record;
use common::topology::{Sentinels, SERVICE};
use common::{app, builder, Browser, RedisServer};
use serde_json::json;
use tower_redis_session::ConfigError;

/// Sets, reads, counts and ends a session through `store`.
async fn smoke(store: &tower_redis_session::SessionStore) {
    let mut b = Browser::new(app(store));
    assert_eq!(b.get("/set/user/alice").await.status, StatusCode::OK);
    assert_eq!(b.get("/get/user").await.body, "alice");
    assert_eq!(b.get("/incr/n/2").await.body, "2");
    assert_eq!(b.get("/regenerate").await.status, StatusCode::OK);
    assert_eq!(b.get("/get/user").await.body, "alice");
    assert_eq!(b.get("/destroy").await.status, StatusCode::OK);
    assert_eq!(b.get("/get/user").await.body, "none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket() {
    let dir = std::env::temp_dir().join(format!("trs-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("redis.sock");
    let redis = RedisServer::start_with(&[
        "--unixsocket",
        &socket.to_string_lossy(),
        "--unixsocketperm",
        "700",
    ]);
    let store = builder()
        .redis_url(format!("redis+unix://{}", socket.display()))
        .build()
        .await
        .unwrap();
    smoke(&store).await;
    // It went over the socket: the TCP port saw only our own inspection.
    let clients: String = redis.cmd(&["CLIENT", "LIST"]);
    assert!(clients.contains("addr=/"), "{clients}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "deadpool-redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applications_deadpool_pool_keeps_the_hot_path() {
    let redis = RedisServer::start();
    let pool = deadpool_redis::Config::from_url(redis.url())
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .unwrap();
    let store = builder().redis_pool(pool.clone()).build().await.unwrap();
    smoke(&store).await;
    let mut b = Browser::new(app(&store));
    b.get("/set/user/alice").await;
    let before = redis.snapshot();
    for _ in 0..50 {
        assert_eq!(b.get("/get/user").await.body, "alice");
    }
    let after = redis.snapshot();
    // One round trip per read, and no checkout PING: the connection is kept, not borrowed.
    assert_eq!(common::calls(&before, &after, "ping"), 0);
    assert_eq!(common::calls(&before, &after, "hgetall"), 50);
    assert!(common::round_trips(&before, &after) <= 50 + 2);
    // The application's own pool still works beside us.
    let mut conn = pool.get().await.unwrap();
    let pong: String = ::redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[cfg(all(feature = "deadpool-redis", feature = "cluster"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applications_cluster_pool() {
    let cluster = tokio::task::spawn_blocking(|| common::topology::Cluster::start(0))
        .await
        .unwrap();
    let pool = deadpool_redis::cluster::Config::from_urls(cluster.urls())
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .unwrap();
    let store = builder().redis_cluster_pool(pool).build().await.unwrap();
    smoke(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_from_the_environment() {
    // One test sets the process environment, so nothing else reads it meanwhile.
    let redis = RedisServer::start();
    let s = tokio::task::spawn_blocking(Sentinels::start).await.unwrap();
    let vars = [
        "REDIS_URL",
        "REDIS_CLUSTER_NODES",
        "REDIS_SENTINELS",
        "REDIS_SENTINEL_SERVICE",
        "REDIS_CA_FILE",
    ];
    let clear = || {
        for v in vars {
            std::env::remove_var(v);
        }
    };
    let set = |k: &str, v: &str| std::env::set_var(k, v);
    clear();
    let err = builder().redis_from_env().build().await.unwrap_err();
    assert!(
        matches!(err, ConfigError::MissingEnv(ref v) if v == "REDIS_URL"),
        "{err}"
    );
    set("REDIS_URL", &format!(" {} ", redis.url()));
    smoke(&builder().redis_from_env().build().await.unwrap()).await;
    set("REDIS_SENTINELS", &s.urls().join(","));
    let err = builder().redis_from_env().build().await.unwrap_err();
    assert!(matches!(err, ConfigError::MissingEnv(ref v) if v == "REDIS_SENTINEL_SERVICE"));
    set("REDIS_SENTINEL_SERVICE", SERVICE);
    let store = builder().redis_from_env().build().await.unwrap();
    smoke(&store).await;
    let primary = s.data_node(s.primary_port().unwrap()).unwrap();
    let keys: Vec<String> = primary.cmd(&["KEYS", "session:*"]);
    assert!(
        !keys.is_empty(),
        "the sessions are on the sentinels' primary"
    );
    set("REDIS_CA_FILE", "/nonexistent/ca.pem");
    let err = builder().redis_from_env().build().await.unwrap_err();
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    #[cfg(feature = "cluster")]
    {
        clear();
        let cluster = tokio::task::spawn_blocking(|| common::topology::Cluster::start(0))
            .await
            .unwrap();
        set("REDIS_CLUSTER_NODES", &cluster.urls().join(", "));
        smoke(&builder().redis_from_env().build().await.unwrap()).await;
    }
    clear();
}

#[tokio::test]
async fn deployment_mistakes_are_clear_errors() {
    let cases: Vec<(tower_redis_session::SessionStoreBuilder, &str)> = vec![
        (builder().redis_url("http://nope"), "Redis URL"),
        (builder().redis_url("redis://user:secret@[bad"), "Redis URL"),
        (
            builder().redis_sentinel("", ["redis://127.0.0.1:26379"]),
            "service",
        ),
        (
            builder().redis_sentinel(SERVICE, Vec::<String>::new()),
            "no sentinel",
        ),
        (
            builder().redis_sentinel(SERVICE, ["nonsense"]),
            "sentinel URL",
        ),
        (
            builder()
                .redis_url("rediss://127.0.0.1:6380")
                .tls_ca_file("/nonexistent/ca.pem"),
            "CA file",
        ),
        (
            builder()
                .redis_url("redis://127.0.0.1:6379")
                .wait_for_replicas(1, Duration::from_secs(5)),
            "below the command timeout",
        ),
    ];
    for (b, expected) in cases {
        let err = b.build().await.expect_err(expected);
        assert!(err.to_string().contains(expected), "{err} vs {expected}");
        assert!(!err.to_string().contains("secret"), "{err}");
    }
    #[cfg(feature = "cluster")]
    {
        let err = builder()
            .redis_cluster(Vec::<String>::new())
            .build()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no cluster node"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_reauthentication_fails_is_retired() {
    let redis = RedisServer::start();
    let _: () = redis.cmd(&["ACL", "SETUSER", "app", "on", ">good", "~*", "&*", "+@all"]);
    let password = Password::new("good", Duration::from_millis(600));
    let store = builder()
        .redis_url(redis.url())
        .pool_size(2)
        .credentials_provider(password.clone())
        .credentials_refresh_ahead(Duration::from_millis(400))
        .build()
        .await
        .unwrap();
    smoke(&store).await;
    assert_eq!(store.stats().connections_retired, 0);
    password.set("wrong");
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.stats().connections_retired < 2 {
        assert!(Instant::now() < deadline, "{:?}", store.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Back to the right secret: new connections authenticate, and service resumes.
    password.set("good");
    let mut b = Browser::new(app(&store));
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.get("/set/a/1").await.status != StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "no recovery: {:?}",
            store.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        b = Browser::new(app(&store));
    }
}

/// `wait_for_replicas`: writes wait for the replicas in the same round trip; with more
/// replicas asked for than exist, a write is refused with 503 after the timeout. The cost of
/// waiting, measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_replicas() {
    let s = tokio::task::spawn_blocking(Sentinels::start).await.unwrap();
    let mut figures = serde_json::Map::new();
    for (name, replicas) in [("no_wait", 0), ("wait_2_replicas", 2)] {
        let mut b = builder().redis_sentinel(SERVICE, s.urls());
        if replicas > 0 {
            b = b.wait_for_replicas(replicas, Duration::from_millis(200));
        }
        let store = b.build().await.unwrap();
        let mut browser = Browser::new(app(&store));
        browser.get("/set/user/alice").await;
        let mut took = Vec::new();
        for i in 0..200 {
            let start = Instant::now();
            let r = browser.get(&format!("/set/n/{i}")).await;
            took.push(start.elapsed());
            assert_eq!(r.status, StatusCode::OK);
        }
        took.sort();
        figures.insert(
            name.into(),
            json!({"write_p50_us": took[100].as_micros(), "write_p99_us": took[198].as_micros()}),
        );
    }
    let store = builder()
        .redis_sentinel(SERVICE, s.urls())
        .wait_for_replicas(3, Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let mut b = Browser::new(app(&store));
    let start = Instant::now();
    let r = b.get("/set/user/alice").await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "only 2 replicas exist"
    );
    assert!(start.elapsed() >= Duration::from_millis(100));
    record("wait_for_replicas", serde_json::Value::Object(figures));
}

/// Credentials that live less than `credentials_refresh_ahead` (5 s tokens against the default
/// 10 minutes) are refreshed halfway through their lifetime, not in a loop: the provider was
/// asked 24 times, and Redis got 96 `AUTH`, in 5 s before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_credentials_are_refreshed_halfway_not_in_a_loop() {
    let redis = RedisServer::start();
    let _: () = redis.cmd(&["ACL", "SETUSER", "app", "on", ">good", "~*", "&*", "+@all"]);
    let password = Password::new("good", Duration::from_secs(2));
    let store = builder()
        .redis_url(redis.url())
        .pool_size(2)
        .credentials_provider(password.clone())
        .build()
        .await
        .unwrap();
    smoke(&store).await;
    let before = redis.snapshot();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let auths = common::calls(&before, &redis.snapshot(), "auth");
    // Refreshes at about 1 s, 2 s, 3 s, 4 s and 5 s, on each of 2 connections: 10. The loop
    // sent one every 200 ms per connection: 50.
    assert!((4..=14).contains(&auths), "{auths} AUTH in 5 s");
    smoke(&store).await;
    assert_eq!(store.stats().connections_retired, 0);
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
    let mut b = Browser::new(app(&store));
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(b.get("/set/x/v").await.status.as_u16());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    println!("statuses: {statuses:?}, stats: {:?}", store.stats());
    assert!(statuses.contains(&200), "never connected: {statuses:?}");
}
